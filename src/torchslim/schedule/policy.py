"""When a scheduled method acts: Distiller's ``starting_epoch``/``ending_epoch``/``frequency`` or an
explicit ``epochs`` list.

As in Distiller, ``ending_epoch`` is exclusive: ``Policy(starting_epoch=0, ending_epoch=10,
frequency=2)`` fires on epochs 0, 2, 4, 6 and 8. Without ``ending_epoch`` the policy fires every
``frequency`` epochs for the rest of training. ``progress(epoch)`` is 0 on the first firing epoch
and 1 on the last (gradual pruning reaches its final sparsity there).

Example::

    >>> from torchslim.schedule import Policy
    >>> p = Policy(starting_epoch=0, ending_epoch=10, frequency=2)
    >>> [e for e in range(12) if p.fires(e)]
    [0, 2, 4, 6, 8]
    >>> p.progress(4), p.progress(8)
    (0.5, 1.0)
    >>> Policy(epochs=[3]).fires(3)
    True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """The epochs on which one scheduled method acts (0-based, like the trainer's epochs)."""

    starting_epoch: int = 0
    ending_epoch: int | None = None
    frequency: int = 1
    epochs: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.epochs is not None:
            object.__setattr__(self, "epochs", tuple(sorted(set(int(e) for e in self.epochs))))
            if not self.epochs or self.epochs[0] < 0:
                raise ValueError("epochs must be a non-empty list of epochs >= 0")
            return
        if self.starting_epoch < 0:
            raise ValueError(f"starting_epoch must be >= 0, got {self.starting_epoch}")
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {self.frequency}")
        if self.ending_epoch is not None and self.ending_epoch <= self.starting_epoch:
            raise ValueError(
                f"ending_epoch ({self.ending_epoch}) must be after starting_epoch "
                f"({self.starting_epoch})"
            )

    @property
    def first(self) -> int:
        """The first epoch the policy fires on."""
        return self.epochs[0] if self.epochs is not None else self.starting_epoch

    @property
    def last(self) -> int | None:
        """The last epoch the policy fires on (None when it never ends)."""
        if self.epochs is not None:
            return self.epochs[-1]
        if self.ending_epoch is None:
            return None
        steps = (self.ending_epoch - 1 - self.starting_epoch) // self.frequency
        return self.starting_epoch + steps * self.frequency

    def fires(self, epoch: int) -> bool:
        """Whether the policy acts on ``epoch``."""
        if self.epochs is not None:
            return epoch in self.epochs
        ended = self.ending_epoch is not None and epoch >= self.ending_epoch
        if epoch < self.starting_epoch or ended:
            return False
        return (epoch - self.starting_epoch) % self.frequency == 0

    def next_after(self, epoch: int) -> int | None:
        """The first firing epoch after ``epoch`` (None when there is none)."""
        if self.epochs is not None:
            return next((e for e in self.epochs if e > epoch), None)
        if epoch < self.starting_epoch:
            return self.starting_epoch
        upcoming = epoch + self.frequency - (epoch - self.starting_epoch) % self.frequency
        return upcoming if self.ending_epoch is None or upcoming < self.ending_epoch else None

    def progress(self, epoch: float) -> float:
        """0.0 on the first firing epoch, 1.0 on the last (and after); 1.0 for open-ended
        or single-epoch policies."""
        last = self.last
        if last is None or last == self.first:
            return 1.0
        return min(max((epoch - self.first) / (last - self.first), 0.0), 1.0)

    def describe(self) -> str:
        """A short human-readable form, for schedule logs."""
        if self.epochs is not None:
            return f"epochs {list(self.epochs)}"
        end = "end" if self.ending_epoch is None else str(self.ending_epoch)
        return f"epochs {self.starting_epoch}..{end} every {self.frequency}"
