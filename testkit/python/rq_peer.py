"""The real Python rq (2.x or 1.13+), driven by the Rust tests: enqueue, fetch, work, info.

usage: rq_peer.py REDIS_URL COMMAND [options]

  enqueue --func F [--args JSON] [--kwargs JSON] [--serializer pickle|json] [--queue Q]
          [--timeout N] [--retry N] [--interval S,...] [--id ID] [--in S]   -> prints the job id
  fetch ID [--serializer pickle|json]      -> prints {status, return_value, exc_string, meta, ...}
  call ID                                  -> prints {func_name, args, kwargs, description,
                                              call_string} (call_string: rq recomputes it)
  work QUEUE... [--serializer pickle|json] -> runs a SimpleWorker in burst mode
  workers                                  -> prints the workers Python sees
  clean QUEUE...                           -> rq's own registry maintenance (clean_registries),
                                              as every Python worker runs it
  started QUEUE                            -> prints the job ids of the started registry
  legacy-schedule --func F --seconds S [--args-dict JSON] [--queue Q]
                                           -> rq-scheduler's enqueue_in(timedelta(S), F, args=dict),
                                              as the old scheduler API called it; prints the id
  version                                  -> prints {"rq": ..., "redis": ...}

The serializer defaults to pickle (rq's own DefaultSerializer). Works with rq 2.x and rq 1.x
(>= 1.12, where Job.return_value/latest_result and the rq:results stream exist; older rq falls
back to job.result / job.exc_info from the job hash).
"""
import argparse
import json
import sys
from datetime import timedelta

import redis as redis_py
import rq
from redis import Redis
from rq import Queue, Retry, SimpleWorker, Worker
from rq.job import Job
from rq.serializers import DefaultSerializer, JSONSerializer

SERIALIZERS = {"json": JSONSerializer, "pickle": DefaultSerializer}
DEFAULT_SERIALIZER = "pickle"


def job_outcome(job):
    """(return_value, exc_string, result_type) from the newest result, whatever the rq version."""
    latest = job.latest_result() if hasattr(job, "latest_result") else None
    if hasattr(job, "return_value") and callable(job.return_value):
        return_value = job.return_value()
    else:  # rq < 1.12: the job hash's `result`
        return_value = job.result
    if latest is not None:
        exc_string = latest.exc_string
        result_type = latest.type.name
    else:  # no stream entry (rq < 1.12, or Redis < 5): the job hash's exc_info
        exc_string = getattr(job, "_exc_info", None)
        result_type = None
    return return_value, exc_string, result_type


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    sub = parser.add_subparsers(dest="command", required=True)

    enqueue = sub.add_parser("enqueue")
    enqueue.add_argument("--func", required=True)
    enqueue.add_argument("--args", default="[]")
    enqueue.add_argument("--kwargs", default="{}")
    enqueue.add_argument("--serializer", default=DEFAULT_SERIALIZER, choices=SERIALIZERS)
    enqueue.add_argument("--queue", default="default")
    enqueue.add_argument("--timeout", type=int)
    enqueue.add_argument("--retry", type=int)
    enqueue.add_argument("--interval", default="")
    enqueue.add_argument("--id")
    enqueue.add_argument("--in", dest="delay", type=float)

    fetch = sub.add_parser("fetch")
    fetch.add_argument("id")
    fetch.add_argument("--serializer", default=DEFAULT_SERIALIZER, choices=SERIALIZERS)

    call = sub.add_parser("call")
    call.add_argument("id")

    work = sub.add_parser("work")
    work.add_argument("queues", nargs="+")
    work.add_argument("--serializer", default=DEFAULT_SERIALIZER, choices=SERIALIZERS)
    work.add_argument("--forking", action="store_true")

    sub.add_parser("workers")
    clean = sub.add_parser("clean")
    clean.add_argument("queues", nargs="+")
    started = sub.add_parser("started")
    started.add_argument("queue")
    sub.add_parser("version")

    legacy = sub.add_parser("legacy-schedule")
    legacy.add_argument("--func", required=True)
    legacy.add_argument("--seconds", type=float, required=True)
    legacy.add_argument("--args-dict", default="{}")
    legacy.add_argument("--queue", default="default_scheduler_q")

    opts = parser.parse_args()
    redis = Redis.from_url(opts.url)

    if opts.command == "enqueue":
        serializer = SERIALIZERS[opts.serializer]
        queue = Queue(opts.queue, connection=redis, serializer=serializer)
        kwargs = {}
        if opts.timeout:
            kwargs["job_timeout"] = opts.timeout
        if opts.retry:
            intervals = [int(i) for i in opts.interval.split(",") if i] or 0
            kwargs["retry"] = Retry(max=opts.retry, interval=intervals)
        if opts.id:
            kwargs["job_id"] = opts.id
        args = json.loads(opts.args)
        call_kwargs = json.loads(opts.kwargs)
        if opts.delay is not None:
            job = queue.enqueue_in(timedelta(seconds=opts.delay), opts.func, *args, **call_kwargs, **kwargs)
        else:
            job = queue.enqueue(opts.func, *args, **call_kwargs, **kwargs)
        print(job.id)
    elif opts.command == "fetch":
        job = Job.fetch(opts.id, connection=redis, serializer=SERIALIZERS[opts.serializer])
        return_value, exc_string, result_type = job_outcome(job)
        print(json.dumps({
            "status": job.get_status(),
            "return_value": return_value,
            "exc_string": exc_string,
            "result_type": result_type,
            "meta": job.meta,
            "origin": job.origin,
            "func_name": job.func_name,
            "worker_name": job.worker_name,
        }, default=str))
    elif opts.command == "call":
        job = Job.fetch(opts.id, connection=redis)
        print(json.dumps({
            "func_name": job.func_name,
            "args": list(job.args),
            "kwargs": job.kwargs,
            "description": job.description,
            "call_string": job.get_call_string(),
        }))
    elif opts.command == "work":
        cls = Worker if opts.forking else SimpleWorker
        worker = cls(opts.queues, connection=redis, serializer=SERIALIZERS[opts.serializer])
        worker.work(burst=True)
    elif opts.command == "legacy-schedule":
        from rq_scheduler import Scheduler
        scheduler = Scheduler(queue_name=opts.queue, connection=redis)
        args = json.loads(opts.args_dict)
        # The old API put a timedelta object among the arguments.
        args["timedelta"] = timedelta(seconds=opts.seconds)
        job = scheduler.enqueue_in(timedelta(seconds=opts.seconds), opts.func, args=args, timeout=180)
        print(job.id)
    elif opts.command == "workers":
        out = []
        for worker in Worker.all(connection=redis):
            out.append({
                "name": worker.name,
                "state": worker.get_state(),
                "queues": worker.queue_names(),
                "successful_job_count": worker.successful_job_count,
                "failed_job_count": worker.failed_job_count,
            })
        print(json.dumps(out))
    elif opts.command == "clean":
        from rq.registry import clean_registries
        for name in opts.queues:
            clean_registries(Queue(name, connection=redis))
    elif opts.command == "started":
        from rq.registry import StartedJobRegistry
        print(json.dumps(StartedJobRegistry(opts.queue, connection=redis).get_job_ids()))
    elif opts.command == "version":
        print(json.dumps({"rq": rq.VERSION, "redis": redis_py.__version__}))


if __name__ == "__main__":
    sys.exit(main())
