"""Example definitions `make run` registers (`apphub serve --defs examples.directory_insights`)."""
