package store

// NoOpenat2 lets the tests run the file backend as on a kernel without
// openat2 (the walk one directory at a time).
var NoOpenat2 = &noOpenat2
