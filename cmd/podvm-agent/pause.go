package main

// The pod's infra process never reaches Go: pause.c's constructor runs it
// when the binary is invoked as agent.PauseName.

/*
#cgo CFLAGS: -Wall -O2
const char *podvm_pause_name(void);
*/
import "C"

// pauseName is the name pause.c answers to.
var pauseName = C.GoString(C.podvm_pause_name())
