"""What every backend shares beyond the contract: use as a context manager."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClosingMixin:
    """``with SqliteDatastore(path) as store:`` closes the store on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
