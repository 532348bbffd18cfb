"""The Dramatiq app of the Redis table (bench/python/redis_queues.py): one
trivial actor on the private redis-server named by BENCH_REDIS_URL, results
kept by the Results middleware in the same Redis."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def square(x):
    return x * x
