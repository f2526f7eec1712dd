"""The one exception root of paperwire and its few meaningful subclasses.

Library code raises these (chained with ``from exc``); only the CLI edge turns them into
messages and exit codes.
"""


class PaperwireError(Exception):
    """Root of every error paperwire raises on purpose."""


class ConfigError(PaperwireError):
    """A settings value, feed list or profile file is unusable."""


class FeedError(PaperwireError):
    """A feed could not be fetched or its document is unusable as a whole."""


class ServiceUnavailable(PaperwireError):
    """Kafka, Redis, SMTP or Airflow is not reachable where the settings say."""


class PoisonMessage(PaperwireError):
    """A Kafka record that can never be processed; it belongs on a dead-letter topic."""
