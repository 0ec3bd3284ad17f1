mod s3;
mod util_s3;
