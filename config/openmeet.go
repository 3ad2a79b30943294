package config

// The OpenMeet platform's conventions, the defaults mxprobe ships with. They
// all live here: another platform changes these (or sets the fields they
// default) and nothing else.
const (
	// OpenMeetBotEmailDomain is the domain of the bots' platform emails
	// (bot-<tenant>@openmeet.net) when global.bot_email_domain is unset.
	OpenMeetBotEmailDomain = "openmeet.net"
	// OpenMeetBotUserPrefix prefixes a tenant id into its bot's Matrix
	// localpart when the bot's user is unset (openmeet-bot-<tenant>).
	OpenMeetBotUserPrefix = "openmeet-bot-"
	// OpenMeetUpstreamAdapter is the default mas.upstream.adapter: the
	// platform's JSON email login.
	OpenMeetUpstreamAdapter = UpstreamOpenMeet
)
