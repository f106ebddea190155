"""Loaded by the runtime processes of the offline gcp test (PYTHONPATH): Beam's GCS client skips its
Application Default Credentials lookup (four retries of the metadata server, ~25 s offline) and
goes anonymous to the GCS emulator that STORAGE_EMULATOR_HOST names. Nothing else changes."""

import os

if os.environ.get("STORAGE_EMULATOR_HOST"):
    try:
        from apache_beam.internal.gcp import auth as _beam_auth

        _beam_auth._Credentials._credentials_init = True
    except ImportError:  # not a Beam process
        pass
