"""The small core every part uses: errors, files, the bundle, the compatibility table, reports, accuracy
comparison, the Runner interface and its timing harness, device peaks. stdlib and numpy only; it imports
no other subpackage.
"""
