// Command image writes deploy/'s installer image (an OCI archive) from an
// installed prefix: `make deploy-image`.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/podvm/podvm/install"
)

func main() {
	source := flag.String("source", "", "prefix holding bin/ and share/podvm/ (make install DESTDIR=... PREFIX=...)")
	out := flag.String("o", "build/podvm-deploy.tar", "archive to write")
	flag.Parse()
	if *source == "" {
		fmt.Fprintln(os.Stderr, "image: -source is required (make deploy-image sets it)")
		os.Exit(2)
	}
	if err := install.WriteImage(*out, *source); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s): import it on a node with `ctr -n k8s.io image import %s`\n", *out, install.ImageName, *out)
}
