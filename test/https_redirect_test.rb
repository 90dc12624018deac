# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/test_certificates"
require "open3"

# The two directives that put a site on HTTPS for good: `ssl_redirect`
# (plain listeners answer 308 to the HTTPS port) and `hsts` (browsers then
# go to HTTPS by themselves), with curl over HTTP/1.1 and HTTP/2.
class HttpsRedirectTest < Minitest::Test
  include HttpHelpers
  include ConfigRefusals

  def setup
    @certs = Dir.mktmpdir("nightmare-redirect")
    @cert, @key = TestCertificates.make(@certs, "a", ["a.test", "127.0.0.1"])
    @public = File.join(@certs, "public")
    FileUtils.mkdir_p(@public)
    File.write(File.join(@public, "page.html"), "<p>static</p>\n")
    @tls_port = LocalProcesses.free_port
  end

  def teardown
    @server&.stop
    FileUtils.rm_rf(@certs)
  end

  def start(ssl: "", nightmare: "", top: "")
    @server = UnicornServer.new(workers: 1, nightmare: nightmare, config: <<~CONFIG).start
      try_files #{@public.inspect}
      status_path "/_status"
      #{top}
      #{TestCertificates.ssl_block(@tls_port, @cert, @key, ssl)}
    CONFIG
  end

  # [status, headers (lowercase names), body] as curl saw them.
  def curl(url, *options)
    out, err, status = Open3.capture3("curl", "-sk", "-D", "-", "--max-time", "10", *options, url)
    assert status.success?, "curl #{url}: #{err}"
    head, _, body = out.partition("\r\n\r\n")
    lines = head.lines.map(&:chomp)
    headers = lines.drop(1).to_h { |line| name, value = line.split(": ", 2); [name.downcase, value] }
    [Integer(lines.first.split[1]), headers, body]
  end

  def plain(path) = "http://127.0.0.1:#{@server.port}#{path}"
  def https(path) = "https://127.0.0.1:#{@tls_port}#{path}"

  def test_ssl_redirect_in_the_block_sends_every_plain_request_to_the_https_port
    start(ssl: "ssl_redirect true")
    status, headers, = curl(plain("/a/b?c=d"), "-H", "Host: a.test:80")
    assert_equal 308, status
    assert_equal "https://a.test:#{@tls_port}/a/b?c=d", headers["location"], "same host and target, HTTPS port"
    status, headers, = curl(plain("/upload"), "--data-binary", "x" * 100_000, "-H", "Host: a.test")
    assert_equal [308, "https://a.test:#{@tls_port}/upload"], [status, headers["location"]], "a POST too, body left"
    status, headers, body = curl(plain("/page.html"), "-I", "-H", "Host: a.test")
    assert_equal [308, ""], [status, body.strip], "HEAD gets no body"
    assert headers["location"]
    assert_equal 200, curl(plain("/_status"))[0], "the status page answers where monitoring asks"
    assert_equal 0, figures_of_app, "no request reached the app"
    status, _, body = curl(https("/pid"))
    assert_equal 200, status, "HTTPS serves"
    assert_match(/\A\d+\z/, body)
  end

  def test_the_setting_redirects_to_the_first_ssl_listener
    start(nightmare: "ssl_redirect: true, http2_cleartext: true")
    status, headers, = curl(plain("/x"), "-H", "Host: a.test")
    assert_equal [308, "https://a.test:#{@tls_port}/x"], [status, headers["location"]]
    status, headers, = curl(plain("/x"), "--http2-prior-knowledge", "-H", "Host: a.test")
    assert_equal 308, status, "a plain client is redirected whatever it speaks"
    assert headers["location"]
  end

  def test_without_ssl_redirect_plain_requests_are_served
    start
    assert_equal 200, curl(plain("/page.html"))[0]
  end

  def test_hsts_is_added_to_https_responses_of_the_app_and_of_try_files_but_not_plain_ones
    start(top: 'hsts max_age: "365d", include_subdomains: true')
    policy = "max-age=31536000; includeSubDomains"
    [[], ["--http2"]].each do |version|
      status, headers, = curl(https("/pid"), *version)
      assert_equal [200, policy], [status, headers["strict-transport-security"]], "app #{version}"
      status, headers, body = curl(https("/page.html"), *version)
      assert_equal [200, policy, "<p>static</p>\n"], [status, headers["strict-transport-security"], body],
                   "try_files #{version}"
      _, headers, = curl(https("/own_hsts"), *version)
      assert_equal "max-age=5", headers["strict-transport-security"], "the app's own policy stays alone"
    end
    _, headers, = curl(plain("/pid"))
    assert_nil headers["strict-transport-security"], "never over plain HTTP (RFC 6797 §7.2)"
  end

  def test_config_errors_name_the_directive
    Dir.mktmpdir("nightmare-redirect-config") do |dir|
      pair = "ssl_certificate #{@cert.inspect}; ssl_certificate_key #{@key.inspect}"
      block = "ssl do\n  listen '127.0.0.1:#{LocalProcesses.free_port}'\n  #{pair}\nend\n"
      {
        "nightmare ssl_redirect: true" => /ssl_redirect: there is no ssl listener to send clients to/,
        "nightmare true\nssl_redirect true" => /ssl_redirect must be called inside an `ssl' block/,
        "nightmare true\n#{block.sub('end', "ssl_redirect 'yes'\nend")}" => /ssl_redirect="yes" not a boolean/,
        "nightmare true\nhsts max_age: 'soon'" => /hsts max_age: "soon" is not a time/,
        "nightmare true\nhsts max_age: '1y', preload: true" => /hsts preload: the preload list takes include_subdomains/,
        "hsts max_age: '1d'" => /hsts needs the front/,
      }.then { |refusals| assert_configs_refused(dir, refusals) }
    end
  end

  private

  # Requests the app has seen (its own counter, read over HTTPS).
  def figures_of_app
    _, _, body = curl(https("/count"))
    Integer(body) - 1
  end
end
