"""A scriptable test double of a CNI plugin (in the spirit of libcni's noop plugin).

Standard library only, and deliberately independent of pycni, so runtime
tests exercise the exec protocol and not pycni's own SDK. Its behaviour comes
from keys of its own plugin config:

  "log": path           every call is appended here as one JSON line
                         {"type", "command", "env": {CNI_*}, "stdin": <decoded>}
  "result": {...}        ADD prints this, or prevResult if absent (pass-through)
  "addIP": "a/b"         ADD appends this address to the result it prints
  "fail": {"ADD": {...}} print this error object and exit 1 for that command
  "garbage": ["ADD"]     print non-JSON and exit with "exitCode" (default 0)
  "crash": ["ADD"]       die by SIGKILL without output
  "stderr": "text"       write this to stderr on every call
"""

import fcntl
import json
import os
import signal
import sys


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        print(
            json.dumps(
                {
                    "cniVersion": "1.1.0",
                    "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
                }
            )
        )
        return 0
    raw = sys.stdin.buffer.read()
    conf = json.loads(raw)
    if conf.get("log"):
        record = {
            "type": conf.get("type"),
            "command": command,
            "env": {k: v for k, v in os.environ.items() if k.startswith("CNI_")},
            "stdin": conf,
        }
        with open(conf["log"], "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(json.dumps(record) + "\n")
    if conf.get("stderr"):
        sys.stderr.write(conf["stderr"])
    if command in conf.get("crash", []):
        os.kill(os.getpid(), signal.SIGKILL)
    if command in conf.get("garbage", []):
        sys.stdout.write("this is not JSON\n")
        return int(conf.get("exitCode", 0))
    failure = conf.get("fail", {}).get(command)
    if failure is not None:
        print(json.dumps(failure))
        return 1
    if command == "ADD":
        result = conf.get("result") or conf.get("prevResult") or {"cniVersion": conf.get("cniVersion")}
        if conf.get("addIP"):
            result.setdefault("ips", []).append({"address": conf["addIP"]})
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
