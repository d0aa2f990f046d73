//! Byte-level formats shared by the views: `.npy` headers, text values and their lengths.
pub mod npy_header;
pub mod text_lengths;
pub mod text_values;
