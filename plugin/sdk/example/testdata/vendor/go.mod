// A vendor's own module, for the example plugin's test (../../example_test.go):
// it copies this directory and ../../main.go to a temporary directory, points
// the replace at the repository and runs go test there.
module example.com/vendor/exampledns

go 1.26.8

require github.com/acmehook/acmehook v0.0.0

replace github.com/acmehook/acmehook => ../../../../..
