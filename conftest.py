# Root conftest: registers the service fixtures kept beside the tests (tests/conftest.py holds the
# retrieval ones), so both sets are shared by every test module.
pytest_plugins = ["tests.service_fixtures"]
