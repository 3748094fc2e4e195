"""One formatter for error messages: every error a user can cause is shown in one line."""


def one_line(error) -> str:
    """``error`` (an exception or a text) as one line of single-spaced words; an
    exception without a message gives its type name."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text
