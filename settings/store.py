"""The configuration in force, its reloads and the subscribers who follow them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import trio

from .loader import ConfigError, load
from .model import Config

log = logging.getLogger(__name__)


class ConfigStore:
    """Holds the current ``Config``; ``reload()`` swaps it only if the files are valid.

    Subscribers call ``wait_changed(seen_version)``, which returns the newer ``(version, config)``
    as soon as there is one. Nothing blocks the reloader: a slow subscriber just sees the latest
    configuration when it next looks, never a queue of stale ones.
    """

    def __init__(
        self,
        conf_dir: Path,
        initial: Config | None = None,
        *,
        overlay: Callable[[Config], Config] | None = None,
    ) -> None:
        """``overlay`` adjusts every configuration read from the files, reloads included (the
        demo uses it to permit its simulated agents' loopback addresses)."""
        self.conf_dir = conf_dir
        self._overlay = overlay or (lambda config: config)
        self._config = initial if initial is not None else self._overlay(load(conf_dir))
        self._version = 0
        self._changed = trio.Event()
        self._stamps = self._file_stamps()

    @property
    def current(self) -> Config:
        return self._config

    @property
    def version(self) -> int:
        return self._version

    def _file_stamps(self) -> tuple[tuple[int, int] | None, ...]:
        stamps: list[tuple[int, int] | None] = []
        for path in self._config.files:
            try:
                st = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def publish(self, config: Config) -> None:
        """Put ``config`` in force and wake every subscriber."""
        self._config = config
        self._version += 1
        self._stamps = self._file_stamps()
        self._changed.set()
        self._changed = trio.Event()

    def reload(self) -> bool:
        """Re-read the files. On error log every problem, keep the old config, return False."""
        try:
            config = self._overlay(load(self.conf_dir))
        except ConfigError as exc:
            self._stamps = self._file_stamps()  # do not report the same bad file every poll
            log.error("configuration reload rejected; the previous configuration stays: %s", exc)
            return False
        if config == self._config:
            self._stamps = self._file_stamps()
            return True
        self.publish(config)
        log.info("configuration reloaded (version %d)", self._version)
        return True

    async def wait_changed(self, seen_version: int) -> tuple[int, Config]:
        """Wait until the version differs from ``seen_version``; return the new one."""
        while self._version == seen_version:
            await self._changed.wait()
        return self._version, self._config

    async def watch_files(self, interval: float = 2.0) -> None:
        """Reload whenever a configuration file's mtime or size changes. Runs until cancelled."""
        while True:
            await trio.sleep(interval)
            if self._file_stamps() != self._stamps:
                self.reload()
