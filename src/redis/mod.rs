//! Redis front end.
