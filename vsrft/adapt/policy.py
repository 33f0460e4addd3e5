"""When to adapt: at the first frame of each shot, and again every `every_s` seconds in long shots."""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class KeyframePolicy:
    every_s: float | None = None       # None: once per shot
    every_frames_fallback: int = 250   # when frames carry no timestamps (said once, in a warning)
    _last_time: float | None = None
    _last_index: int = 0
    _warned: bool = False

    def should_adapt(self, index: int, time_s: float | None, shot_start: bool) -> bool:
        """Stateful: True marks `index` as a keyframe to adapt on."""
        due = shot_start
        if not due and self.every_s:
            if time_s is not None and self._last_time is not None:
                due = time_s - self._last_time >= self.every_s
            else:
                if not self._warned:
                    self._warned = True
                    log.warning("frames without timestamps: adapt_every=%g s is taken as every %d frames",
                                self.every_s, self.every_frames_fallback)
                due = index - self._last_index >= self.every_frames_fallback
        if due:
            self._last_time, self._last_index = time_s, index
        return due
