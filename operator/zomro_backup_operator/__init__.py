"""Keeps Zomro VPS backup schedules in step with BackupSchedule resources."""

__version__ = "0.1.0"
