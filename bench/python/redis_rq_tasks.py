"""The RQ task of the Redis table (bench/python/redis_queues.py): RQ
workers import it by its dotted name."""


def square(x):
    return x * x
