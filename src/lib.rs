//! tollgate library.
