"""The demo: a small mixed corpus generated in code, the sample media it and the tests use, and
a tour of the APIs in plain boto3.
"""
