"""The backends: one folder per vendor, each loaded through the `edge_builder.plugins` entry point
as any other package's would be (pyproject.toml declares them; builder.plugins loads them).

A backend folder holds its runtime (`BaseSession`), its steps, its formats, the wrappers of its
vendor's tools, and beside them its data: `targets/` (the targets that ship its format),
`locks/` (the package locks of its images) and `dockerfiles/` (templates and partials).
"""
