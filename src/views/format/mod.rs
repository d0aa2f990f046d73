//! Byte-level formats shared by the views: `.npy` headers and text values.
pub mod npy_header;
pub mod text_values;
