fn main() {
    contrast_build::link_libtorch();
}
