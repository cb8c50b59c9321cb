"""Pack the collection's shared core (plugins/module_utils) into one importable zip.

Run on the controller by the role. The zip holds the package ``zkrollout_core``: what ships to hosts (``core``,
``store``, ``agent`` and ``exposition.py``), never the controller-only ``controller`` sub-package, with fixed
timestamps and sorted entries, so the same code always gives the same bytes: the role then copies one file, and
only when the code really changed.

    python3 pack_core.py <module_utils dir> <zip path>
"""

import os
import sys
import tempfile
import zipfile

PACKAGE = "zkrollout_core"
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
# Controller-only code (writes, waiter, reports, the Ansible adapter) never runs on a host.
CONTROLLER_ONLY = "controller"


def entries(source):
    """(archive name, file path) of every .py file under ``source``, sorted."""
    found = [(PACKAGE + "/__init__.py", None)]
    for directory, subdirectories, files in os.walk(source):
        skipped = {"__pycache__", CONTROLLER_ONLY} if directory == source else {"__pycache__"}
        subdirectories[:] = sorted(d for d in subdirectories if d not in skipped)
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                found.append((PACKAGE + "/" + os.path.relpath(path, source).replace(os.sep, "/"), path))
    return sorted(found)


def pack(source, target):
    """Write the zip to ``target`` atomically; concurrent packers each use their own temporary file."""
    handle, temporary = tempfile.mkstemp(prefix=os.path.basename(target) + ".", dir=os.path.dirname(os.path.abspath(target)))
    os.close(handle)
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in entries(source):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            if path is None:
                archive.writestr(info, b"")
            else:
                with open(path, "rb") as handle:
                    archive.writestr(info, handle.read())
    os.replace(temporary, target)


if __name__ == "__main__":
    if len(sys.argv) != 3 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: pack_core.py <module_utils dir> <zip path>")
    pack(sys.argv[1], sys.argv[2])
