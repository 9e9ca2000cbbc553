package main

import "strings"

// browserLabel names the browser and operating system a User-Agent header
// describes, as a person would tell their sessions apart: "Firefox on
// Linux", "Safari on iOS", "curl". It knows the common ones only and says
// "Unknown browser" for the rest. The label, not the header, is what a
// session keeps: it is short, and says no more than the account page needs.
func browserLabel(ua string) string {
	browser := "Unknown browser"
	switch {
	case strings.HasPrefix(ua, "curl/"):
		return "curl"
	// Edge, Opera and Chrome on iOS all say Safari, and the first two
	// Chrome too: the more particular names come first.
	case strings.Contains(ua, "Edg/"), strings.Contains(ua, "EdgA/"), strings.Contains(ua, "EdgiOS/"):
		browser = "Edge"
	case strings.Contains(ua, "OPR/"):
		browser = "Opera"
	case strings.Contains(ua, "Firefox/"), strings.Contains(ua, "FxiOS/"):
		browser = "Firefox"
	case strings.Contains(ua, "Chrome/"), strings.Contains(ua, "CriOS/"), strings.Contains(ua, "Chromium/"):
		browser = "Chrome"
	case strings.Contains(ua, "Safari/") && strings.Contains(ua, "Version/"):
		browser = "Safari"
	}
	var os string
	switch {
	case strings.Contains(ua, "Android"): // says Linux too
		os = "Android"
	case strings.Contains(ua, "iPhone"), strings.Contains(ua, "iPad"), strings.Contains(ua, "iPod"):
		os = "iOS"
	case strings.Contains(ua, "Windows"):
		os = "Windows"
	case strings.Contains(ua, "Macintosh"), strings.Contains(ua, "Mac OS X"):
		os = "macOS"
	case strings.Contains(ua, "CrOS"):
		os = "ChromeOS"
	case strings.Contains(ua, "Linux"):
		os = "Linux"
	}
	if os == "" {
		return browser
	}
	return browser + " on " + os
}
