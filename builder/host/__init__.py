"""What runs on the user's machine: the CLI, making a plan, fetching inputs, building images, the runners that start
stages, the step cache, results, reports and the device fleet. It may import builder.stage and the shared modules of
builder/; neither imports it back."""
