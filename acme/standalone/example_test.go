package standalone_test

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/acmehook/acmehook/acme/standalone"
)

func ExampleHTTP01Server() {
	srv := &standalone.HTTP01Server{ListenAddrs: []string{"127.0.0.1:0"}}
	if err := srv.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown(context.Background())

	const token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	if err := srv.Add(token, token+".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"); err != nil {
		fmt.Println(err)
		return
	}
	resp, err := http.Get("http://" + srv.Addrs()[0].String() + "/.well-known/acme-challenge/" + token)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI
}
