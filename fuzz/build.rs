fn main() {
    // the targets that reach libtorch (checkpoint) need its rpath, as every package that links tch
    contrast_build::link_libtorch();
}
