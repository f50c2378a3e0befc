"""The error every bad setting raises (segdcn.config's checks, the apps' own): a ValueError whose message
names the key as a user types it and what it expects. Kept apart from segdcn.config so that the data
errors can derive from it without importing the schemas."""


class ConfigError(ValueError):
    """A setting with a value that cannot work; the message names the key and what it expects."""
