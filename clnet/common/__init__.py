"""Host-side code that every backend shares: packed networks, Pearson row preparation,
rescue and selection, and the cache of device-side copies.

The public modules and both backend packages may import from here; nothing here imports
a backend (tests/test_architecture.py checks it).
"""
