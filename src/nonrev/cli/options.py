"""Click options shared by several ``nonrev`` commands (kept apart from cli.py so
that the command modules can import them without a cycle)."""

import click


def data_options(command):
    """The DATA argument and the --key, --labels, --labels-key options shared by the
    commands that read a user's data set (analyze, steer)."""
    decorators = [
        click.argument("data", type=click.Path(dir_okay=True, path_type=str)),
        click.option("--key", default=None, metavar="NAME",
                     help="Array to use in an .npz DATA file."),
        click.option("--labels", "labels_path", default=None, metavar="FILE",
                     help="Class labels, one per sample (.npy/.npz/.csv/.txt). Without "
                          "labels the total covariance plays the between-class covariance."),
        click.option("--labels-key", default=None, metavar="NAME",
                     help="Array to use in an .npz labels file."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command
