//! Fixed-sample statistical tests and the special functions behind them.
