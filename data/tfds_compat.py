"""TFDS without TensorFlow (and without download machinery) for our offline builders.

``tensorflow-datasets`` 4.9.10 generates and reads ``array_record`` datasets with numpy
only: ``GeneratorBasedBuilder.download_and_prepare(file_format="array_record")`` writes
shards through ``array_record`` (no Beam, no TensorFlow), and
``builder.as_data_source(split)`` / ``tfds.builder_from_directory`` read them back.

One piece needs a workaround: locating the builder's source file
(``DatasetBuilder.code_path``, used only to find a ``checksums.tsv`` of download URLs)
calls ``importlib_resources``, a package not in our lock file. Our builders download
nothing, so :class:`OfflineBuilderMixin` reports no code path and hence no checksums.
"""

from __future__ import annotations

from tensorflow_datasets.core import utils as tfds_utils


class OfflineBuilderMixin:
    """Mix in before ``tfds.core.GeneratorBasedBuilder``: no code path, no URL checksums."""

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls):
        return None
