"""Stand-in for ansible-test's downloaded get-pip script.

ansible-test bootstraps pip in its sanity-test venvs by running a script it downloads from a
host that this machine cannot reach. This file takes its place in ansible-test's cache: it
bootstraps pip from the interpreter's own ensurepip, then installs what ansible-test asked for
through the configured package index.
"""

import ensurepip
import os
import subprocess
import sys

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
UNSUPPORTED = {"--no-setuptools", "--no-wheel"}


def main():
    ensurepip.bootstrap(upgrade=True)
    packages = [arg for arg in sys.argv[1:] if arg not in UNSUPPORTED]
    if not packages:
        return 0
    command = [sys.executable, "-m", "pip", "install"]
    if os.path.exists(CA_BUNDLE):
        command += ["--cert", CA_BUNDLE]
    return subprocess.call(command + packages)


if __name__ == "__main__":
    sys.exit(main())
