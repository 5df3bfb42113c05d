"""One work group through Ray Client, in a process of its own (`python -m tests._ray_client
ADDRESS TMP`), for `tests/test_ray_cluster.py`: Ray Client's threads can crash the interpreter
as it tears down, which must not take the test session with it.

Prints one JSON line: per trial key, whether the remote result equals the local one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path


def main() -> None:
    address, tmp = sys.argv[1], Path(sys.argv[2])
    import ray

    from tests.test_ray_cluster import _executor, _remote_work

    work, code, local = _remote_work(tmp)
    remote_group = dataclasses.replace(work, config_dir=Path("/nonexistent/daemon-config"))
    executor = _executor(address, code, cpus=2)
    results: dict = {}
    try:
        devices = executor.start()
        client = executor._client and len(devices) == 1
        executor.run([remote_group], lambda trial, result: results.__setitem__(trial.key, result))
    finally:
        executor.close()
        ray.shutdown()
    report = {
        "client": client,
        "trials": {
            key: {
                "status": results[key].status if key in results else "missing",
                "error": results[key].error if key in results else None,
                "same": key in results
                and results[key].status == "ok"
                and abs(results[key].score - result.score) <= 1e-6
                and results[key].predictions == result.predictions,
            }
            for key, result in local.items()
        },
        "extra": sorted(set(results) - set(local)),
    }
    print(json.dumps(report), flush=True)
    os._exit(0)  # past Ray Client's teardown (see the docstring)


if __name__ == "__main__":
    main()
