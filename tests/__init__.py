"""typedq's test suite.

This file only makes ``tests`` a package, so that pytest (default ``prepend`` import mode)
puts the repository root on ``sys.path`` and every test can ``from tests.helpers import
...`` however pytest is started. The folders below stay package-less: give each test
module a basename that is unique across ``tests/``.
"""
