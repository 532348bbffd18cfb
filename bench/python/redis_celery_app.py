"""The Celery app of the Redis table (bench/python/redis_queues.py): one
trivial task on the private redis-server named by BENCH_REDIS_URL, with
Celery's defaults (prefork pool, JSON, prefetch multiplier 4), results in
the same Redis."""

import os

from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("redis_celery_app", broker=URL, backend=URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
)


@app.task
def square(x):
    return x * x
