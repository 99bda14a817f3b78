"""nox sessions: ``nox -s tests``, ``nox -s benchmarks``, ``nox -s lint``."""

import nox

nox.options.sessions = ["tests", "lint"]


@nox.session(python="3.11")
def tests(session):
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def benchmarks(session):
    session.install("-e", ".[test]")
    session.run("pytest", "benchmarks", "--benchmark-only", *session.posargs)


@nox.session(python="3.11")
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks")
