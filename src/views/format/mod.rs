//! Byte-level formats shared by the views: `.npy` headers and text values.
pub mod npy;
pub mod text;
