"""What an embedder may raise besides a bug, and what the encode loop does with each."""

from __future__ import annotations


class EmbedderUnavailable(RuntimeError):
    """The embedder cannot be used for now (an API's circuit is open, or its transient failures
    outlasted every retry): nothing about the texts themselves. A window that meets it is
    dead-lettered whole, without retries or splitting, and embedded again once it is back."""


class RequestRejected(ValueError):
    """The embedder refused the texts for what they are (an API's 4xx other than 429): retrying
    the same texts cannot help, so the window is split at once to isolate the one refused."""
