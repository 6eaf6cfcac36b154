"""Folders written whole or not at all: a full disk or a kill while writing leaves the earlier folder, or none, never
a folder with a config and no weights."""

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

# What a failed write raises: open() and json an OSError, safetensors a SafetensorError, torch.save a RuntimeError
# ("unexpected pos ..." from its zip writer).
WRITE_ERRORS = (OSError, SafetensorError, RuntimeError)


def write_failure(folder: Path, error: BaseException) -> OSError:
    """An OSError naming the folder that could not be written, the error and the free space of its disk."""
    try:
        free = f"{shutil.disk_usage(folder.parent).free / 2**20:,.0f} MB free on its disk"
    except OSError:
        free = "free space unknown"
    return OSError(f"could not write {folder} ({type(error).__name__}: {error}; {free})")


@contextmanager
def replaced_whole(folder: str | Path):
    """A staging folder beside `folder` to write into; at the end of the block it replaces `folder` (an earlier one
    is deleted only then). If the block fails, the staging folder is removed and an earlier `folder` is left as it
    was; a write error becomes write_failure's OSError."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        yield staging
        if folder.exists():
            earlier = staging.with_name(f"{staging.name}-earlier")
            folder.rename(earlier)
            staging.rename(folder)
            shutil.rmtree(earlier)
        else:
            staging.rename(folder)
    except WRITE_ERRORS as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_failure(folder, error) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
