// Package https is gatehouse's HTTPS frontend for Microsoft Exchange and
// other web applications: TLS terminated at the edge, HTTP/1.1 forwarded
// per client connection with header names kept in their own case, each
// request classified by path into a service (OWA, ECP, EWS, ActiveSync,
// RPC over HTTP, MAPI over HTTP, Autodiscover, OAB, PowerShell, default)
// and routed to that service's back-ends with its own affinity and idle
// timeout.
//
// It does what generic reverse proxies get wrong in front of Exchange:
// NTLM and Negotiate logins stay on the back-end connection that
// authenticated them, for one client connection only; the IN and OUT
// channels of an Outlook Anywhere virtual connection meet on one back-end;
// ActiveSync Ping and other long polls are held as long as Exchange holds
// them; bodies of any size stream both ways without buffering; and the
// edge certificate is compared with each back-end's, since Extended
// Protection fails when they differ.
//
// A Frontend implements proxy.Handler. Its Config is the https: section of
// a listener's YAML.
//
// It may import proxy and tls, never another protocol package.
package https
