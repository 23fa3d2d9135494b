"""Run crystal-watchd's CLI with fal_client pointed at the fake fal server.

FAL_RUN_HOST / FAL_QUEUE_RUN_HOST and SSL_CERT_FILE come from the environment (fal_client
reads the hosts at import); the storage and CDN base URLs are module constants, patched here
in-process from FAKEFAL_BASE_URL before the daemon starts.

    FAKEFAL_BASE_URL=https://127.0.0.1:PORT python bootstrap.py run --config cfg.yaml
"""

import os
import sys

# isort: off
from crystal_watchd.lean import import_without_rich

import_without_rich()  # first, as the installed command does (crystal_watchd.__main__)
import fal_client.client as fal_client_module  # noqa: E402
# isort: on

base = os.environ["FAKEFAL_BASE_URL"]
fal_client_module.REST_URL = base
fal_client_module.CDN_URL = base

from crystal_watchd.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
