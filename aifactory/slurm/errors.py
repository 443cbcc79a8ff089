"""Errors of the Slurm bridge; their text is the outside system's own words."""


class SlurmError(Exception):
    """Slurm answered and refused (bad partition, over limits, unknown job, ...)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class SlurmUnreachable(SlurmError):
    """slurmrestd (or the SSH path to it) did not answer; nothing is known about the jobs."""


class SlurmAuthError(SlurmUnreachable):
    """The token was refused: as good as unreachable until a new token comes (no phase may change)."""


class SubmitUncertain(SlurmUnreachable):
    """A submit whose answer was lost after it may have reached slurmctld (a timeout, a gateway's 502-504, a
    connection lost while sbatch ran). Before submitting again, look for the job in Slurm's own list."""
