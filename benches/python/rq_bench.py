"""The Python side of benches/queue.rs: RQ 2.12's enqueue rates, and its workers in burst mode.

usage: rq_bench.py REDIS_URL enqueue --jobs N     -> prints "label<TAB>rate" lines
       rq_bench.py REDIS_URL work --kind simple|fork  -> runs a burst worker on queue `py`
"""
import argparse
import time

from redis import Redis
from rq import Queue, SimpleWorker, Worker


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    sub = parser.add_subparsers(dest="command", required=True)
    enqueue = sub.add_parser("enqueue")
    enqueue.add_argument("--jobs", type=int, required=True)
    work = sub.add_parser("work")
    work.add_argument("--kind", choices=["simple", "fork"], required=True)
    opts = parser.parse_args()
    redis = Redis.from_url(opts.url)

    if opts.command == "enqueue":
        # RQ's default serializer (pickle), as HDX's Python side and hdx-jobs both write.
        queue = Queue("pyenq", connection=redis)
        start = time.perf_counter()
        for _ in range(opts.jobs):
            queue.enqueue("pyjobs.noop")
        rate = opts.jobs / (time.perf_counter() - start)
        print(f"enqueue, Python RQ Queue.enqueue loop\t{rate:.0f} jobs/s")
        start = time.perf_counter()
        done = 0
        while done < opts.jobs:
            batch = min(1000, opts.jobs - done)
            queue.enqueue_many([Queue.prepare_data("pyjobs.noop") for _ in range(batch)])
            done += batch
        rate = opts.jobs / (time.perf_counter() - start)
        print(f"enqueue, Python RQ Queue.enqueue_many (1,000 per pipeline)\t{rate:.0f} jobs/s")
    else:
        cls = SimpleWorker if opts.kind == "simple" else Worker
        worker = cls(["py"], connection=redis)
        worker.log.setLevel("WARNING")
        worker.work(burst=True, logging_level="WARNING")


if __name__ == "__main__":
    main()
