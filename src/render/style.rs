//! Terminal styling: ANSI colours when asked for, plain text otherwise.

/// Terminal styling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Whether to emit ANSI colours.
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Red bold.
    pub fn error(self, t: &str) -> String {
        self.paint("1;31", t)
    }

    /// Yellow bold.
    pub fn warn(self, t: &str) -> String {
        self.paint("1;33", t)
    }

    /// Bold.
    pub fn bold(self, t: &str) -> String {
        self.paint("1", t)
    }

    /// Dim blue, for gutters.
    pub fn gutter(self, t: &str) -> String {
        self.paint("34", t)
    }

    /// Green.
    pub fn good(self, t: &str) -> String {
        self.paint("32", t)
    }
}

impl Style {
    /// Yellow.
    pub fn change(self, t: &str) -> String {
        self.paint("33", t)
    }

    /// Red.
    pub fn remove(self, t: &str) -> String {
        self.paint("31", t)
    }

    /// Cyan.
    pub fn roll(self, t: &str) -> String {
        self.paint("36", t)
    }
}
