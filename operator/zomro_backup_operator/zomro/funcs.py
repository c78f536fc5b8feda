"""The names of the Zomro API functions this client calls (the ``func`` parameter), in one place."""

from __future__ import annotations

from typing import Final

FUNC_AUTH: Final = "auth"
FUNC_INSTANCES: Final = "instances"
FUNC_SCHEDULES: Final = "instances.fleio_bckps.schedule"
FUNC_SCHEDULE_EDIT: Final = "instances.fleio_bckps.schedule.edit"
FUNC_SCHEDULE_DELETE: Final = "instances.fleio_bckps.schedule.delete"
FUNC_INSTANCE_EDIT: Final = "instances.edit"
FUNC_BACKUPS: Final = "instances.fleio_bckps"
FUNC_BACKUP_EDIT: Final = "instances.fleio_bckps.edit"
FUNC_IMAGE_EDIT: Final = "image.edit"
FUNC_IMAGE_DELETE: Final = "image.delete"
