package main

// testActor is who makes the changes that tests make straight through the
// store.
var testActor = actor{Name: "test", Via: "test"}
