"""Copied from the verified recipe in ../shared/gcs-emulator (emulator with its six fixes, plus a seventh here: mediaLink follows the asking request; CONNECT proxy; token stub).
They run as scripts (never imported), started by tests/gcs.py, so tests can use gs:// on 127.0.0.1 with no network."""
