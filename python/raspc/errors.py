"""The exception raspc raises for bad programs, inputs and files."""


class RaspcError(ValueError):
    """A RASP program, input or file raspc cannot use.

    str(e) is the text the command line prints (``file:line:col: error: message``, the
    source line and a caret; every error when there are several). ``file``, ``line`` and
    ``col`` locate the first error (None when it has no place in a source: a weight
    file's problem, an input's) and ``message`` is its text alone.
    """

    def __init__(self, text, file=None, line=None, col=None, message=None):
        super().__init__(text)
        self.file = file
        self.line = line
        self.col = col
        self.message = text if message is None else message
