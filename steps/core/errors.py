"""Errors a user can act on: one line on the terminal, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: what was wrong, the value, what is allowed, what to do."""

    exit_code = 2


class Unreachable(UserError):
    """A service the step needs (S3, the Hugging Face Hub) did not answer: the same input may succeed later,
    so the Argo tasks exit as transient and are retried."""


class StepFailed(Exception):
    """A step could not produce its result (not the user's input)."""

    exit_code = 1
