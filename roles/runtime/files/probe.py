# Run by the runtime role with the device's python3 (passed with -c): what the runtime install
# needs to know, as one JSON line. Standard library only; works from Python 3.6 on.
# Arguments: paths whose missing components (top-down) are reported, so the role records
# exactly the directories it creates.
import json
import os
import platform
import sys

result = {
    "python": sys.executable,
    "version": "%d.%d" % sys.version_info[:2],
    "full_version": platform.python_version(),
    "architecture": platform.machine(),
    "libc": "",
    "libc_version": "",
    "venv": True,
    "venv_error": "",
    "missing": {},
}
try:
    result["libc"], result["libc_version"] = platform.libc_ver()
except Exception as error:  # reported, never fatal
    result["libc"] = "unknown: %s" % error
try:
    import ensurepip  # noqa: F401 - Debian/Ubuntu ship it in python3-venv
    import venv  # noqa: F401
except ImportError as error:
    result["venv"], result["venv_error"] = False, str(error)
for path in sys.argv[1:]:
    missing = []
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        missing.insert(0, current)
        current = os.path.dirname(current)
    result["missing"][path] = missing
print(json.dumps(result))
